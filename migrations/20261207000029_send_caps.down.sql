DROP TABLE IF EXISTS send_counts;
