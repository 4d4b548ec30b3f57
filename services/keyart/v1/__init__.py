"""Generated protobuf stubs (`make protos`); never edit them."""
