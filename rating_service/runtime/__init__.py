"""The process around the code: the composition root, the server and worker lifecycles, Temporal."""
