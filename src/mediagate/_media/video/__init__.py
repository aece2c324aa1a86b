"""Video: the loader registry, pure sampling rules, one module per backend."""
