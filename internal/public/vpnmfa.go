package public

import (
	"errors"
	"net/http"

	"github.com/wardvpn/ward/internal/api"
	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/vpnsession"
)

// VPN MFA: the client proves a second factor for one location and gets the
// preshared key of a fresh session; the answer comes once the location's
// gateways have installed the peer.

type mfaStartRequest struct {
	LocationID string `json:"location_id"`
	PublicKey  string `json:"public_key"`
	Method     string `json:"method"`
}

type mfaFinishRequest struct {
	Token string `json:"token"`
	Code  string `json:"code"`
}

func (h *Handler) vpnMFAStart(w http.ResponseWriter, r *http.Request, _ string) error {
	if h.sessions == nil {
		return &core.Error{Kind: core.KindUnavailable, Code: "mfa_unavailable", Message: "VPN MFA is not enabled on this instance"}
	}
	var in mfaStartRequest
	if err := api.Decode(w, r, &in); err != nil {
		return err
	}
	if in.Method == "" {
		in.Method = "totp"
	}
	ch, err := h.sessions.Start(r.Context(), in.LocationID, in.PublicKey, in.Method)
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusCreated, ch)
	return nil
}

func (h *Handler) vpnMFAFinish(w http.ResponseWriter, r *http.Request, _ string) error {
	if h.sessions == nil {
		return &core.Error{Kind: core.KindUnavailable, Code: "mfa_unavailable", Message: "VPN MFA is not enabled on this instance"}
	}
	var in mfaFinishRequest
	if err := api.Decode(w, r, &in); err != nil {
		return err
	}
	sess, err := h.sessions.Finish(r.Context(), in.Token, in.Code)
	var ackErr *vpnsession.AckError
	if errors.As(err, &ackErr) {
		// The session exists and its key is valid, but some gateway has not
		// installed it yet: say so clearly; the client may connect anyway
		// and will reach the gateways that did.
		api.WriteJSON(w, http.StatusAccepted, map[string]any{"session": sess, "warning": map[string]any{
			"code": ackErr.Err.Code, "message": ackErr.Err.Message, "lagging": ackErr.Lagging}})
		return nil
	}
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{"session": sess})
	return nil
}
