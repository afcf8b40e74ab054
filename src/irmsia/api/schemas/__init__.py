"""Wire schemas (pydantic), named with fixed suffixes: *Public, *Create, *Update."""
