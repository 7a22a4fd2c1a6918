package plan

import (
	"fmt"
	"time"
)

// Replaced is a droplet a rebuild replaced, waiting to be retired.
type Replaced struct {
	Workspace string
	ID        int
	Name      string
	Account   string
	// LastSeen is its last heartbeat or reported n8n activity (zero:
	// never heard of).
	LastSeen time.Time
}

// BackupCopy is a good backup: who took it and when its data is from.
type BackupCopy struct {
	ID        string
	DropletID int
	Started   time.Time
}

// RetireAction is what ends replaced droplet r once its successor is
// healthy. newest is the newest good backup r itself took (nil: none). r
// is destroyed outright only when that backup started no earlier than
// r's last sign of life, so it holds everything r was seen to write; the
// reason says so, for the journal. Otherwise the action is Retire: r is
// stopped and snapshotted, and destroyed only once the snapshot exists.
// No droplet whose data has no copy at least as new is destroyed.
func RetireAction(r Replaced, newest *BackupCopy) Action {
	a := Action{Kind: Retire, Workspace: r.Workspace, Account: r.Account, Droplet: r.Name, DropletID: r.ID, APICalls: Retire.Info().APICalls,
		Reason: "watchdog: the rebuilt droplet is healthy; the replaced one has no copy newer than its last sign of life: snapshot, then destroy"}
	if newest != nil && newest.DropletID == r.ID && !r.LastSeen.IsZero() && !newest.Started.Before(r.LastSeen) {
		a.Kind, a.APICalls = Destroy, Destroy.Info().APICalls
		a.Reason = fmt.Sprintf("watchdog: the rebuilt droplet is healthy; retiring the one it replaced: backup %s taken %s is newer than its last sign of life %s",
			newest.ID, newest.Started.UTC().Format(time.RFC3339), r.LastSeen.UTC().Format(time.RFC3339))
	}
	return a
}

// RestoreFrom is the backup a new droplet starting from snapshot (zero
// Created: fresh) restores: newest, when it is newer than the snapshot
// ("" otherwise). A droplet never starts from an older copy when a newer
// one exists.
func RestoreFrom(snapshot Snapshot, newest *BackupCopy) string {
	if newest == nil || (snapshot.ID != "" && !newest.Started.After(snapshot.Created)) {
		return ""
	}
	return newest.ID
}
