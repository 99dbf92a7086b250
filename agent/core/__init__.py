"""The core vocabulary: models, errors, topics and merge-patch; imports nothing else of ours."""
