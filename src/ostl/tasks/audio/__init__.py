"""Audio for the speech tasks: offline synthesis (:mod:`.synth`, eSpeak NG) and a cochlea-like
front end that turns sound into spike trains (:mod:`.cochlea`)."""
