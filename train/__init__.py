"""Lightning side of distilprune: modules, data, callbacks and the pipeline entry points."""
