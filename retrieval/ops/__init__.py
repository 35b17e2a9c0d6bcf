"""Use cases that join the layers: adding images (`adding`: model and manifest, then
`indexing`, fed by the decode `pipeline`), getting the model (`embedders`), searching
(`querying` assembles the queries, `searching` runs them), the storage policy (`storage`),
approximate-search upkeep (`ann`), exporting and importing embeddings (`exchange`,
`importing`), pruning (`pruning`), checking and repairing (`checking`), measuring
throughput (`bench`). They return plain records; they never print."""
