"""Where desired sites come from (labels, the sites file, hand-written nginx files) and the triggers that wake the loop."""
