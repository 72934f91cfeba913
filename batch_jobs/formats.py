"""The file formats recordings are imported from and exported to.

Kept apart from the importers and exporters (which import pandas, MNE and pyxdf: about 1.5 s) so
that building the CLI's parser, which offers these as choices, costs no more than this module.
"""

IMPORT_FORMATS = ("brainflow", "openbci", "edf", "bdf", "gdf", "xdf")
EXPORT_FORMATS = ("edf", "bdf", "bids", "xdf")
