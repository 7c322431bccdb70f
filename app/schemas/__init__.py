"""marshmallow schemas: every request body is loaded through one, every response dumped by one."""
