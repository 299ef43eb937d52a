"""Pure library: torch, kornia, networkx, safetensors. Never imports ComfyUI."""
