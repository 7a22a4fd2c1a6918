-- 0015_leader_epoch: fencing of the leader's DigitalOcean calls.
--
-- The leader holds a session advisory lock (reconciler/store TryLead). Each
-- time a replica takes that lock it increments leader_lease.epoch, in the
-- session that holds the lock, and keeps the number: its lease epoch. Every
-- journal write of an operation (begin, step, retry, finish) is made only
-- while leader_lease.epoch still equals the writer's epoch, reading the row
-- FOR SHARE so a new leader's increment waits for a write in progress and
-- every later write of the old leader fails. operations.epoch records the
-- epoch the operation was started or last advanced under.
--
-- A replica that lost its lock can therefore neither start nor advance an
-- operation once another replica led: its journal write is refused and it
-- stops leading (reconciler/cloud ErrFenced).

CREATE TABLE leader_lease (
	id       boolean PRIMARY KEY DEFAULT true CHECK (id),
	epoch    bigint NOT NULL CHECK (epoch > 0),
	holder   text NOT NULL,
	taken_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE operations ADD COLUMN epoch bigint;
