"""This service's own JSON API: image inputs, query options, and how results are presented."""
