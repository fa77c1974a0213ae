"""Dataset readers, each for the layout its dataset ships in. See seggpt.data.registry for the type names."""
