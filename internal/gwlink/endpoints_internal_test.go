package gwlink

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/wardvpn/ward/internal/core/stats"
)

func TestEndpointDiffAndChunks(t *testing.T) {
	cur := map[string]stats.PeerEndpoint{}
	for i := range 12001 {
		k := fmt.Sprintf("key-%05d", i)
		cur[k] = stats.PeerEndpoint{PublicKey: k, Endpoint: fmt.Sprintf("198.51.100.%d:%d", i%250, 1024+i), LastHandshake: int64(1700000000000 + i)}
	}
	var s endpointSync
	all := s.changes(cur)
	if len(all) != len(cur) || all[0].PublicKey != "key-00000" || all[len(all)-1].PublicKey != "key-12000" {
		t.Fatalf("first sync: %d entries, want all %d sorted", len(all), len(cur))
	}
	msgs := endpointMessages(all)
	if len(msgs) != 3 || len(msgs[0].GetPeerEndpoints().GetEndpoints()) != endpointChunk || len(msgs[2].GetPeerEndpoints().GetEndpoints()) != 2001 {
		t.Fatalf("chunks: %d messages", len(msgs))
	}
	for _, m := range msgs {
		if n := proto.Size(m); n > 1<<20 {
			t.Fatalf("message of %d bytes; keep them well under gRPC's 4 MB", n)
		}
	}
	s.sent = map[string]stats.PeerEndpoint{}
	for k, e := range cur {
		s.sent[k] = e
	}
	if c := s.changes(cur); len(c) != 0 {
		t.Fatalf("nothing changed but %d entries to send", len(c))
	}
	// A roam and a newer handshake are changes; nothing else is.
	e := cur["key-00007"]
	e.Endpoint = "203.0.113.7:7"
	cur["key-00007"] = e
	e = cur["key-00008"]
	e.LastHandshake++
	cur["key-00008"] = e
	if c := s.changes(cur); len(c) != 2 || c[0].PublicKey != "key-00007" || c[1].PublicKey != "key-00008" {
		t.Fatalf("changes = %+v", c)
	}
	if endpointMessages(nil) != nil {
		t.Fatal("messages for nothing")
	}
}
