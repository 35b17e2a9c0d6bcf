"""Use cases that join the layers: indexing folders (`indexing`, fed by the decode
`pipeline`), searching (`searching`), exporting and importing embeddings (`exchange`),
checking and repairing (`checking`), measuring throughput (`bench`). They return plain
records; they never print."""
