package web

// accountRoutes registers the account pages (none yet).
func (s *Server) accountRoutes() []route { return nil }
