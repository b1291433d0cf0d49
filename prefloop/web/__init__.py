"""The web app (`prefloop web`: arena, leaderboard, dashboard) and `prefloop report`."""
