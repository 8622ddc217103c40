package vpn

import (
	"testing"

	"github.com/wardvpn/ward/internal/core"
)

// The test-only lowering of the MFA disconnect threshold minimum
// (WARD_TEST_MIN_MFA_THRESHOLD, read by ward core at start).
func TestTestMinMFADisconnectThreshold(t *testing.T) {
	svc := New(nil, nil)
	mode, five, sixty := MFAInternal, 5, 60
	validate := func(threshold *int) error {
		l := Location{Name: "x", ListenPort: DefaultListenPort, MTU: DefaultMTU, MFAMode: MFADisabled, DisconnectThreshold: DefaultDisconnectThreshold,
			PeersWithoutCore: PeersWithoutCoreKeep, DropPeersAfter: DefaultDropPeersAfter, Addresses: []string{"10.9.0.1/24"}, Endpoint: "vpn.example.com"}
		return LocationInput{MFAMode: &mode, DisconnectThreshold: threshold}.apply(&l, svc.minMFAThreshold())
	}
	for _, tc := range []struct {
		name    string
		min     int
		value   *int
		wantErr bool
	}{
		{"real minimum refuses 5 s", 0, &five, true},
		{"real minimum refuses 60 s", 0, &sixty, true},
		{"lowered to 5 accepts 5 s", 5, &five, false},
		{"lowered to 30 refuses 5 s", 30, &five, true},
		{"lowered to 30 accepts 60 s", 30, &sixty, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := svc.SetTestMinMFADisconnectThreshold(tc.min); err != nil {
				t.Fatal(err)
			}
			err := validate(tc.value)
			if (err != nil) != tc.wantErr {
				t.Fatalf("apply = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				if e, ok := core.AsError(err); !ok || e.Field != "disconnect_threshold" {
					t.Fatalf("error %v is not about disconnect_threshold", err)
				}
			}
		})
	}
	for _, bad := range []int{-1, MinMFADisconnectThreshold + 1} {
		if svc.SetTestMinMFADisconnectThreshold(bad) == nil {
			t.Errorf("SetTestMinMFADisconnectThreshold(%d) accepted", bad)
		}
	}
}
