"""Authentication and authorization: nkeys, NATS JWTs, account resolvers, users and permissions."""
