"""Starting, checking and stopping the embedded stack; the Spark session factory; deployment notes."""
