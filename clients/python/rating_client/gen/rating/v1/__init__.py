# Generated from protos/ by tools/gen_protos.py. Do not edit.
