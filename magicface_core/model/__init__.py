"""The MagicFace network: checkpoints, identity attention, the AU-guided sampler, SD 1.5 parts."""
