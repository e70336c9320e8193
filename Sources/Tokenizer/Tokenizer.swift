// Tokenizer module: see docs/ and the issue that builds it.
