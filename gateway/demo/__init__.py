"""The demo: its population of holders and cards, the virtual card's model, the demo registry."""
