"""Data: dataset readers and label parsers, the frame cache, clip datasets, the datamodule, the synthetic set."""
