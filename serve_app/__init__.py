"""serve_app: the Ray Serve layer over treecore (HTTP ingress, pipeline deployments, settings, storage)."""

__version__ = "0.1.0"
