"""The fracture classifier: network definitions, self-describing bundles, heatmaps and inference."""
