"""Transforming any Keras model — copying it with some layers replaced, folding batch norms — without reading
YAML: what `net`, `prune`, `fbs`, `quantize` and `tfmot` build on."""
