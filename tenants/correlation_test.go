package tenants

import "testing"

func TestCorrelation(t *testing.T) {
	const commit = "0123456789abcdef0123456789abcdef01234567"
	for _, tc := range []struct {
		name, message, want string
	}{
		{"no trailer", "onboard ws-a\n", "git-0123456789ab"},
		{"trailer", WithCorrelation("patch ws-a: state", "req-7f3a"), "req-7f3a"},
		{"case and spaces", "x\n\ngenesis-correlation-id:   api:42  \n", "api:42"},
		{"invalid value ignored", "x\n\nGenesis-Correlation-Id: has space\n", "git-0123456789ab"},
		{"too long ignored", "x\n\nGenesis-Correlation-Id: " + string(make([]byte, 65)) + "\n", "git-0123456789ab"},
		{"last valid wins", "x\n\nGenesis-Correlation-Id: a\nGenesis-Correlation-Id: b\n", "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Correlation(tc.message, commit); got != tc.want {
				t.Errorf("Correlation = %q, want %q", got, tc.want)
			}
		})
	}
}

func FuzzCorrelation(f *testing.F) {
	f.Add("x\n\nGenesis-Correlation-Id: req-1\n")
	f.Fuzz(func(t *testing.T, msg string) {
		got := Correlation(msg, "abc")
		if got != "git-abc" && !correlationID.MatchString(got) {
			t.Errorf("Correlation(%q) = %q: not a valid id", msg, got)
		}
	})
}
