"""Safety: uploaded model files are checked in a limited child process before the server loads them."""
