package mail

import (
	"context"
	"fmt"
	"time"

	"github.com/wardvpn/ward/internal/core/vpnsession"
)

// VPNCodes sends VPN MFA e-mail codes.
type VPNCodes struct{ Sender Sender }

// SendVPNCode implements vpnsession.Mailer.
func (v VPNCodes) SendVPNCode(ctx context.Context, m vpnsession.CodeMail) error {
	return v.Sender.Send(ctx, Message{To: m.Email, Subject: "Your VPN code for " + m.LocationName,
		Text: fmt.Sprintf("Hello %s,\n\nyour code to connect %q to the VPN location %q is:\n\n    %s\n\nIt expires at %s. If you did not ask for it, tell your administrator.\n",
			m.Username, m.DeviceName, m.LocationName, m.Code, m.ExpiresAt.UTC().Format(time.RFC1123))})
}
