"""What tests, benchmarks and tools share: random model factories, literal references, ComfyUI graph helpers."""
