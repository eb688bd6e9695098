"""Small helpers every layer may use: atomic file and folder writes (`fsio`), integrity manifests and file modes
(`integrity`), URL redaction (`urls`), how bad input is reported (`problems`), logging (`log`).

Owns no project knowledge; imports nothing of the package, no torch, no Hydra.

Modules: `digests`, `fsio`, `integrity`, `log`, `problems`, `procs`, `quiet`, `urls`.
Imports from the package: nothing.
"""
