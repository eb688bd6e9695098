"""Small helpers every layer may use: atomic file/folder writes, URL redaction. No torch, no Hydra, no package imports."""
