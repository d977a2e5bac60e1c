"""Model families: networks from a composition's features to a property."""
