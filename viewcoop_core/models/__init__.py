"""The CLIP backbone, the prompt learners and the model DDP wraps."""
