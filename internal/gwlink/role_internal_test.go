package gwlink

import (
	"testing"

	"github.com/wardvpn/ward/internal/core/vpn"
	gw "github.com/wardvpn/ward/internal/rpc/gatewayv1"
)

// A gateway older than the role report sends ROLE_UNSPECIFIED (the zero
// value): core shows "unknown".
func TestRoleName(t *testing.T) {
	for in, want := range map[gw.Role]string{gw.Role_ROLE_UNSPECIFIED: vpn.RoleUnknown, gw.Role_ROLE_ACTIVE: vpn.RoleActive,
		gw.Role_ROLE_STANDBY: vpn.RoleStandby, gw.Role(42): vpn.RoleUnknown} {
		if got := roleName(in); got != want {
			t.Errorf("roleName(%v) = %q, want %q", in, got, want)
		}
	}
	if got := roleName((&gw.Hello{}).GetRole()); got != vpn.RoleUnknown {
		t.Errorf("a Hello without role: %q", got)
	}
}
