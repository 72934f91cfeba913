"""The production deployment on paper (README.md beside this file): Kubernetes manifests, the
container image, and the one generator (``manifests``) that derives the Kafka topics and users from
``schemas.catalog`` so that the cluster's topics cannot drift from the code's."""
