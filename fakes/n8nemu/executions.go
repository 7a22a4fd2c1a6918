package n8nemu

import (
	"net/http"
	"time"
)

type execution struct {
	id                   int
	workflowID           string
	startedAt, stoppedAt string
}

func (e *execution) json() map[string]any {
	return map[string]any{
		"id": e.id, "finished": true, "mode": "trigger", "retryOf": nil, "retrySuccessId": nil,
		"startedAt": e.startedAt, "stoppedAt": e.stoppedAt, "workflowId": e.workflowID,
		"waitTill": nil, "status": "success",
	}
}

// RecordExecution records a finished execution of workflowID that started
// at at, as if n8n had run it. Listings show the latest recorded first.
func (s *Server) RecordExecution(workflowID string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	const layout = "2006-01-02T15:04:05.000Z"
	s.executions = append(s.executions, &execution{
		id: len(s.executions) + 1, workflowID: workflowID,
		startedAt: at.UTC().Format(layout), stoppedAt: at.UTC().Add(time.Second).Format(layout),
	})
}

// listExecutions answers GET /api/v1/executions newest (highest id) first,
// like n8n; its filters (status, workflowId, ...) are not emulated.
func (s *Server) listExecutions(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var items []any
	for i := len(s.executions) - 1; i >= 0; i-- {
		items = append(items, s.executions[i].json())
	}
	page(w, r, items)
}
