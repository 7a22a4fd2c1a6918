package reconciler

import "genesis.dev/fleet/api"

// errNoSnapshot is returned before the first sync (the API answers it 503:
// not yet).
var errNoSnapshot = api.NewError(api.ErrUnavailable, "no desired state yet")
