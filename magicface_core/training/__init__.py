"""Training MagicFace (the authors published none): config, data, initialisation from SD 1.5, the loop."""
