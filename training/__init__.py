"""Training scripts for the learned parts of treecore (not part of the package or the image)."""
