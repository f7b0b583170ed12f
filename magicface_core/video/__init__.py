"""Video: edit the expression all through a clip, or animate a portrait from a driving clip."""
