"""Face preprocessing: detection, landmarks, crops and paste-back, parsing, the condition image, AU estimation."""
