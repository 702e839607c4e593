"""Console script ``nnunet-ext``: thin argparse wrappers over library functions."""
