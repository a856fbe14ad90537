"""The operations console: a web page for telco ops on top of the gRPC APIs."""
