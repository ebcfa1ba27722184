"""Model parts: backbone (ResNet + FPN), dense heads, assigners, losses, detector."""
