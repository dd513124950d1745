"""`python -m layerwise ...` is the `layerwise` command (also under `accelerate launch -m layerwise`)."""

from layerwise.cli.main import entry_point

if __name__ == "__main__":
    entry_point()
