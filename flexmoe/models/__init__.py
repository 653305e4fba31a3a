"""PyTorch Mixture-of-Experts: backbone, local gate, experts, masked top-k routing."""
