"""Feature visualisation: filter patterns and the atlas cache shared by every session."""
