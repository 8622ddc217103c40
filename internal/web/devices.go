package web

// deviceRoutes registers the devices pages (none yet).
func (s *Server) deviceRoutes() []route { return nil }
