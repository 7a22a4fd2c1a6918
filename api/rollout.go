package api

import "time"

// Rollout is one rollout in GET /v1/rollouts and GET /v1/rollouts/{id},
// and the answer of its pause, resume and abort.
type Rollout struct {
	ID            string `json:"id"`
	State         string `json:"state"`
	Reason        string `json:"reason,omitempty"`
	Commit        string `json:"commit,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	// From and To summarize the fleet inputs moved between; Changes says
	// what differs ("n8n 1.2.0 -> 1.3.0", "template lead-capture").
	From    RolloutInputs `json:"from"`
	To      RolloutInputs `json:"to"`
	Changes []string      `json:"changes"`
	// Wave is the current wave's index; Waves every wave with its counts.
	Wave           int              `json:"wave"`
	Waves          []RolloutWave    `json:"waves"`
	Failures       []RolloutFailure `json:"failures,omitempty"`
	AckedFailures  int              `json:"acked_failures"`
	SupersededBy   string           `json:"superseded_by,omitempty"`
	WaveStartedAt  *time.Time       `json:"wave_started_at,omitempty"`
	BakingSince    *time.Time       `json:"baking_since,omitempty"`
	LastProgressAt time.Time        `json:"last_progress_at"`
	CreatedAt      time.Time        `json:"created_at"`
	FinishedAt     *time.Time       `json:"finished_at,omitempty"`
}

// RolloutInputs summarizes a set of fleet-wide inputs.
type RolloutInputs struct {
	Digest       string   `json:"digest"`
	N8NVersion   string   `json:"n8n_version"`
	AgentVersion string   `json:"agent_version,omitempty"`
	Templates    []string `json:"templates"`
}

// RolloutWave is one wave of a rollout: its policy, resolved, and how far
// its members got. Status is done, current or waiting.
type RolloutWave struct {
	Name           string  `json:"name"`
	Status         string  `json:"status"`
	BakeSeconds    float64 `json:"bake_seconds"`
	MaxUnavailable int     `json:"max_unavailable"`
	FailureBudget  int     `json:"failure_budget"`
	Members        int     `json:"members"`
	Released       int     `json:"released"`
	Applied        int     `json:"applied"`
	Skipped        int     `json:"skipped"`
	Failed         int     `json:"failed"`
}

// RolloutFailure is a member that failed, with the reason (the agent's
// own when it rejected the change).
type RolloutFailure struct {
	Workspace string    `json:"workspace"`
	Wave      string    `json:"wave"`
	Reason    string    `json:"reason"`
	At        time.Time `json:"at"`
}

// RolloutList is GET /v1/rollouts, newest first.
type RolloutList struct {
	Rollouts []Rollout `json:"rollouts"`
}

// RolloutAction is the optional body of POST /v1/rollouts/{id}/pause,
// resume and abort.
type RolloutAction struct {
	Reason string `json:"reason,omitempty"`
}
