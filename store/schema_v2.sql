-- Version 2: leases. A replica drives a cluster (runs its actions, fixes its drift) only while it
-- holds the cluster's lease; a lease not renewed before expires_at may be taken by another.
CREATE TABLE leases (
  cluster_id BIGINT PRIMARY KEY,
  holder TEXT NOT NULL,
  expires_at TEXT NOT NULL
);
